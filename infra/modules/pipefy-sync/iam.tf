# One role per function, each allowed only what that function does:
#   sync-*  read the source prefixes of its destinations, read config, read/write state,
#           read/write reports, read its destinations' token secrets, invoke itself (hand-off) and
#           notify (its asynchronous destinations), put lifecycle events on the deployment's
#           event bus (when there is one), dead-letter to SQS, write its logs.
#   notify  read config, read/write its state/<destination>/notify.json, read the Slack
#           webhook secret, read run pages (the presigned links it posts are signed with
#           its role), dead-letter to SQS, write its logs.

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  for_each = local.functions

  name               = local.function_names[each.key]
  description        = "Execution role of ${local.function_names[each.key]}"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  tags               = local.tags
}

locals {
  bucket_arn = "arn:${local.partition}:s3:::${local.bucket_name}"
}

data "aws_iam_policy_document" "function" {
  for_each = local.functions

  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function[each.key].arn}:*"]
  }

  statement {
    sid       = "ReadDestinationFiles"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arn}/${local.config_prefix}*"]
  }

  # Unconditioned on purpose: S3 answers a GET of a missing key with 404 only to a caller
  # that may list the bucket (403 otherwise), and the state code relies on 404 for "no lease
  # / no manifest / no notify state yet". Listing reveals key names of this deployment's own
  # bucket only.
  statement {
    sid       = "ListPipefySyncBucket"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
  }

  # Lease, ledger, intents, pending work: conditional puts and deletes.
  dynamic "statement" {
    for_each = contains(local.sync_functions, each.key) ? [1] : []
    content {
      sid       = "ReadWriteState"
      actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
      resources = ["${local.bucket_arn}/${local.state_prefix}*"]
    }
  }

  # Reports are written in parts; at the end of a run its parts are read back for the run
  # page, and the destination's history.json is updated read-modify-write.
  dynamic "statement" {
    for_each = contains(local.sync_functions, each.key) ? [1] : []
    content {
      sid       = "ReadWriteReports"
      actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
      resources = ["${local.bucket_arn}/${local.report_prefix}*"]
    }
  }

  # notify's messages link run pages through presigned URLs, which act with its role.
  dynamic "statement" {
    for_each = each.key == "notify" ? [1] : []
    content {
      sid       = "ReadRunPages"
      actions   = ["s3:GetObject"]
      resources = ["${local.bucket_arn}/${local.report_prefix}*/report.html"]
    }
  }

  # notify remembers whether a destination is failing, to say "recovered" once.
  dynamic "statement" {
    for_each = each.key == "notify" ? [1] : []
    content {
      sid       = "ReadWriteNotifyState"
      actions   = ["s3:GetObject", "s3:PutObject"]
      resources = ["${local.bucket_arn}/${local.state_prefix}*/notify.json"]
    }
  }

  # Source tables: only <layer>/<table>/ of this function's destinations, one statement per
  # bucket (no Sid: bucket names do not make valid Sids). GetObject covers HeadObject.
  dynamic "statement" {
    for_each = lookup(local.source_access, each.key, {})
    content {
      actions   = ["s3:GetObject"]
      resources = [for p in statement.value : "arn:${local.partition}:s3:::${statement.key}/${p}*"]
    }
  }

  dynamic "statement" {
    for_each = lookup(local.source_access, each.key, {})
    content {
      actions   = ["s3:ListBucket"]
      resources = ["arn:${local.partition}:s3:::${statement.key}"]

      condition {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = flatten([for p in statement.value : [p, "${p}*"]])
      }
    }
  }

  dynamic "statement" {
    for_each = length(local.function_secret_arns[each.key]) > 0 ? [1] : []
    content {
      sid       = "ReadOwnSecrets"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = local.function_secret_arns[each.key]
    }
  }

  # The module's key: bucket objects (all three functions write some), secrets,
  # environment variables.
  statement {
    sid       = "UseModuleKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]
  }

  dynamic "statement" {
    for_each = length(var.source_kms_key_arns) > 0 ? [1] : []
    content {
      sid       = "DecryptWithSourceKeys"
      actions   = ["kms:Decrypt"]
      resources = var.source_kms_key_arns
    }
  }

  # Hand-off: a run that reaches its time budget invokes its own function asynchronously.
  # notify: Lambda delivers this function's asynchronous results to it with this role.
  dynamic "statement" {
    for_each = contains(local.sync_functions, each.key) ? [1] : []
    content {
      sid       = "InvokeSelfAndNotify"
      actions   = ["lambda:InvokeFunction"]
      resources = [local.function_arns[each.key], local.function_arns["notify"]]
    }
  }

  # Lifecycle events (run started / completed / failed), on the one bus of event_bus_name,
  # with the source the code sends (EVENT_SOURCE in shared/src/lambda/lifecycle.rs).
  dynamic "statement" {
    for_each = contains(local.sync_functions, each.key) && local.event_bus_arn != null ? [1] : []
    content {
      sid       = "PutLifecycleEvents"
      actions   = ["events:PutEvents"]
      resources = [local.event_bus_arn]

      condition {
        test     = "StringEquals"
        variable = "events:source"
        values   = [local.event_source]
      }
    }
  }

  # dead_letter_config of every function, and notify's on-failure destination.
  statement {
    sid       = "SendDeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.lambda_dlq.arn]
  }

  dynamic "statement" {
    for_each = var.tracing_mode == "Active" ? [1] : []
    content {
      sid = "WriteTraces"
      # X-Ray has no resource-level permissions for these two actions.
      actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
      resources = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "function" {
  for_each = local.functions

  name   = "${local.function_names[each.key]}-least-privilege"
  role   = aws_iam_role.function[each.key].id
  policy = data.aws_iam_policy_document.function[each.key].json
}
