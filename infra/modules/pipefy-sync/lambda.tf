# The three functions, built by `make build` (cargo lambda build --release --arm64
# --output-format zip): <lambda_zip_dir>/<function>/bootstrap.zip, a `bootstrap` binary for
# the provided.al2023 runtime on Graviton.

resource "aws_cloudwatch_log_group" "function" {
  for_each = local.functions

  # Lambda's default group name, created here first so retention and encryption apply from
  # the first invocation.
  name              = "/aws/lambda/${local.function_names[each.key]}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
  tags              = local.tags
}

# Events no function could handle: asynchronous invocations that failed all their retries
# (dead_letter_config of every function) and notifications notify could not deliver.
resource "aws_sqs_queue" "lambda_dlq" {
  name                      = "${var.name}-dead-letters"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
  tags                      = local.tags
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_117:The functions call Pipefy's public API and AWS APIs only; a VPC would add a NAT gateway and no protection.
  #checkov:skip=CKV_AWS_272:The zips are built from this repository by `make build` and deployed by the same pipeline; there is no signing profile to verify them against.
  for_each = local.functions

  function_name = local.function_names[each.key]
  description   = each.value.description
  role          = aws_iam_role.function[each.key].arn

  filename         = "${var.lambda_zip_dir}/${each.key}/bootstrap.zip"
  source_code_hash = filebase64sha256("${var.lambda_zip_dir}/${each.key}/bootstrap.zip")
  handler          = "bootstrap"
  runtime          = "provided.al2023"
  architectures    = ["arm64"]

  timeout                        = each.value.timeout
  memory_size                    = each.value.memory_size
  reserved_concurrent_executions = each.value.reserved_concurrency

  ephemeral_storage {
    size = each.value.ephemeral_storage
  }

  kms_key_arn = aws_kms_key.this.arn

  environment {
    # Unset, not empty: a variable the deployment does not configure is left out.
    variables = { for k, v in local.function_environment[each.key] : k => v if v != null }
  }

  logging_config {
    log_format            = "JSON"
    log_group             = aws_cloudwatch_log_group.function[each.key].name
    application_log_level = var.log_level
    system_log_level      = "WARN"
  }

  dead_letter_config {
    target_arn = aws_sqs_queue.lambda_dlq.arn
  }

  tracing_config {
    mode = var.tracing_mode
  }

  tags = local.tags

  # CreateFunction checks that the role may send to the dead-letter queue.
  depends_on = [aws_iam_role_policy.function]
}

# Asynchronous invocation, written out rather than left to Lambda's defaults. sync-*: two
# retries (the lease and the ledger make a repeated run safe), then the event goes to notify;
# finished runs go to notify too, which reports them.
resource "aws_lambda_function_event_invoke_config" "sync" {
  for_each = toset(local.sync_functions)

  function_name                = aws_lambda_function.this[each.key].function_name
  maximum_retry_attempts       = 2
  maximum_event_age_in_seconds = var.async_maximum_event_age_seconds

  destination_config {
    on_success {
      destination = aws_lambda_function.this["notify"].arn
    }

    on_failure {
      destination = aws_lambda_function.this["notify"].arn
    }
  }
}

# notify's own failures end in the dead-letter queue, never back in a function.
resource "aws_lambda_function_event_invoke_config" "notify" {
  function_name                = aws_lambda_function.this["notify"].function_name
  maximum_retry_attempts       = var.notify_maximum_retry_attempts
  maximum_event_age_in_seconds = var.async_maximum_event_age_seconds

  destination_config {
    on_failure {
      destination = aws_sqs_queue.lambda_dlq.arn
    }
  }
}
