# One EventBridge Scheduler schedule per destination with trigger.schedule, invoking
# sync-scheduled asynchronously with the payload it parses.

resource "aws_scheduler_schedule_group" "this" {
  name = var.name
  tags = local.tags
}

# Deliveries Scheduler gave up on (sync-scheduled throttled or unavailable past the retries).
resource "aws_sqs_queue" "scheduler_dlq" {
  name                      = "${var.name}-scheduler-dead-letters"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
  tags                      = local.tags
}

data "aws_iam_policy_document" "scheduler_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }

    # Only schedules of this account may use the role (confused deputy).
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  name               = "${var.name}-scheduler"
  description        = "EventBridge Scheduler invokes ${local.function_names["sync-scheduled"]}"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "scheduler" {
  statement {
    sid       = "InvokeSyncScheduled"
    actions   = ["lambda:InvokeFunction"]
    resources = [local.function_arns["sync-scheduled"]]
  }

  statement {
    sid       = "SendDeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.scheduler_dlq.arn]
  }

  # The schedules' payloads are encrypted with the module's key.
  statement {
    sid       = "DecryptPayloads"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this.arn]
  }
}

resource "aws_iam_role_policy" "scheduler" {
  name   = "${var.name}-scheduler"
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.scheduler.json
}

resource "aws_scheduler_schedule" "destination" {
  for_each = local.scheduled_destinations

  name        = each.key
  group_name  = aws_scheduler_schedule_group.this.name
  description = "pipefy-sync: run destination ${each.key}"
  kms_key_arn = aws_kms_key.this.arn

  schedule_expression          = each.value.expression
  schedule_expression_timezone = each.value.timezone

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.this["sync-scheduled"].arn
    role_arn = aws_iam_role.scheduler.arn

    # {"destination": "<name>", "scheduled_time": "<aws.scheduler.scheduled-time>"}, sent as
    # is (destinations.tf).
    input = local.schedule_payloads[each.key]

    retry_policy {
      maximum_retry_attempts       = var.scheduler_maximum_retry_attempts
      maximum_event_age_in_seconds = var.scheduler_maximum_event_age_seconds
    }

    dead_letter_config {
      arn = aws_sqs_queue.scheduler_dlq.arn
    }
  }

  depends_on = [aws_iam_role_policy.scheduler, terraform_data.destinations_check]
}
