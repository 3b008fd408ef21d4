# One customer managed key for everything pipefy-sync stores: the bucket (state can hold
# card ids and row keys, reports hold row values), the secrets, the log groups, the
# functions' environment and the schedules' payloads.

resource "aws_kms_key" "this" {
  description             = "pipefy-sync (${var.name}): bucket, secrets, logs, environment, schedules"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_key_deletion_window_days
  policy                  = data.aws_iam_policy_document.kms.json
  tags                    = local.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

data "aws_iam_policy_document" "kms" {
  # The account administers the key through IAM; the functions and the scheduler role get
  # their narrow kms: actions from their own policies (iam.tf).
  #checkov:skip=CKV_AWS_109:A key policy's Resource "*" is this key only; the account root statement is the standard delegation to IAM.
  #checkov:skip=CKV_AWS_111:A key policy's Resource "*" is this key only; the account root statement is the standard delegation to IAM.
  #checkov:skip=CKV_AWS_356:A key policy's Resource "*" is this key only; the account root statement is the standard delegation to IAM.
  statement {
    sid       = "AccountAdministersThroughIam"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  # CloudWatch Logs encrypts the functions' log groups, and only those.
  statement {
    sid = "CloudWatchLogsEncryptsTheFunctionLogGroups"
    actions = [
      "kms:Encrypt*",
      "kms:Decrypt*",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:Describe*",
    ]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/aws/lambda/${var.name}-*"]
    }
  }
}
