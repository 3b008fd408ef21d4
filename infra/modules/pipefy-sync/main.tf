# pipefy-sync in one AWS account: three Lambda functions, the bucket they keep config, state
# and reports in, their triggers (EventBridge Scheduler, S3 notifications), secrets, KMS key,
# dead-letter queues, logs and alarms. Files by concern:
#   destinations.tf  destination files -> schedules, filters, scopes (provider-free)
#   bucket.tf        the pipefy-sync bucket and the uploaded destination files
#   kms.tf           the customer managed key everything is encrypted with
#   secrets.tf       token and Slack webhook secrets (created or existing)
#   iam.tf           one role per function, least privilege
#   lambda.tf        functions, log groups, asynchronous invocation, dead-letter queue
#   scheduler.tf     one schedule per scheduled destination
#   notifications.tf S3 -> sync-upload for destinations with an upload trigger
#   alarms.tf        function errors, failed rows, dead letters
#   events.tf        the EventBridge bus of the runs' lifecycle events (provider-free)
#   results.tf       the Glue catalog table over the runs' per-row results (Athena)

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  # `id` is the region name in both provider 5.x and 6.x (`name` is deprecated in 6.x).
  region = data.aws_region.current.id

  # The functions read their destination files under this prefix (DESIGN.md: default of
  # PIPEFY_SYNC_CONFIG_PREFIX); bucket.tf uploads them there.
  config_prefix = "config/destinations/"
  state_prefix  = "state/"
  report_prefix = "reports/"

  bucket_name = coalesce(var.bucket_name, "${var.name}-${local.account_id}-${local.region}")

  # One Lambda function per crate under functions/; the key is the crate name, the cargo
  # lambda output folder (target/lambda/<key>/bootstrap.zip) and the function name suffix.
  functions = {
    "sync-scheduled" = {
      description          = "pipefy-sync: runs a destination on its schedule or by hand"
      timeout              = 900
      memory_size          = var.sync_memory_size
      ephemeral_storage    = var.sync_ephemeral_storage_size
      reserved_concurrency = var.sync_reserved_concurrency
    }
    "sync-upload" = {
      description          = "pipefy-sync: syncs the files uploaded to a destination's table"
      timeout              = 900
      memory_size          = var.sync_memory_size
      ephemeral_storage    = var.sync_ephemeral_storage_size
      reserved_concurrency = var.sync_reserved_concurrency
    }
    "notify" = {
      description          = "pipefy-sync: reports finished and failed runs"
      timeout              = var.notify_timeout_seconds
      memory_size          = var.notify_memory_size
      ephemeral_storage    = 512
      reserved_concurrency = var.notify_reserved_concurrency
    }
  }
  sync_functions = ["sync-scheduled", "sync-upload"]

  function_names = { for k in keys(local.functions) : k => "${var.name}-${k}" }
  # Built from the names rather than taken from aws_lambda_function: the roles' policies need
  # them (hand-off to itself, destinations) before the functions exist.
  function_arns = {
    for k, n in local.function_names : k => "arn:${local.partition}:lambda:${local.region}:${local.account_id}:function:${n}"
  }

  # Environment of each function: exactly the variables of DESIGN.md's table that the
  # function reads (tests/infra/agreement.py checks both directions). null = unset, which
  # the code reads as "not configured".
  function_environment = {
    "sync-scheduled" = {
      PIPEFY_SYNC_BUCKET              = local.bucket_name
      PIPEFY_SYNC_CONFIG_PREFIX       = local.config_prefix
      PIPEFY_SYNC_TIME_BUDGET_SECONDS = tostring(var.time_budget_seconds)
      PIPEFY_SYNC_METRICS_NAMESPACE   = var.metrics_namespace
      PIPEFY_SYNC_ALLOWED_HOSTS       = join(",", var.allowed_pipefy_hosts)
      PIPEFY_SYNC_EVENT_BUS           = local.event_bus_arn
    }
    "sync-upload" = {
      PIPEFY_SYNC_BUCKET              = local.bucket_name
      PIPEFY_SYNC_CONFIG_PREFIX       = local.config_prefix
      PIPEFY_SYNC_TIME_BUDGET_SECONDS = tostring(var.time_budget_seconds)
      PIPEFY_SYNC_METRICS_NAMESPACE   = var.metrics_namespace
      PIPEFY_SYNC_ALLOWED_HOSTS       = join(",", var.allowed_pipefy_hosts)
      PIPEFY_SYNC_EVENT_BUS           = local.event_bus_arn
    }
    "notify" = {
      PIPEFY_SYNC_BUCKET                   = local.bucket_name
      PIPEFY_SYNC_CONFIG_PREFIX            = local.config_prefix
      PIPEFY_SYNC_SLACK_WEBHOOK_SECRET     = local.slack_webhook_secret_arn
      PIPEFY_SYNC_REPORT_LINK_EXPIRY_HOURS = tostring(var.report_link_expiry_hours)
    }
  }

  tags = merge(var.tags, { "pipefy-sync:deployment" = var.name })
}

# Refuses to plan while a destination file is wrong, listing every problem at once with its
# file name (the functions would reject the same files at run time).
resource "terraform_data" "destinations_check" {
  input = sort(keys(local.destinations))

  lifecycle {
    precondition {
      condition     = length(local.destination_errors) == 0
      error_message = "Destination files in ${var.destinations_dir} are not deployable:\n${join("\n", local.destination_errors)}"
    }
  }
}
