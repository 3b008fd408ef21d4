# Inputs of the module. destinations_dir is declared in destinations.tf and event_bus_name in
# events.tf (both kept provider-free for tests/infra/agreement.py).

variable "name" {
  description = "Name prefix of every resource: functions are <name>-sync-scheduled, <name>-sync-upload and <name>-notify."
  type        = string
  default     = "pipefy-sync"

  validation {
    # Lowercase because it also prefixes the default bucket name; 31 characters keep
    # <name>-<account>-<region> within S3's 63.
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}$", var.name))
    error_message = "name must be 1-31 characters: lowercase letters, digits and '-', starting with a letter."
  }
}

variable "lambda_zip_dir" {
  description = "Folder holding the zips `make build` produces (cargo lambda build --release --arm64 --output-format zip): <dir>/<function>/bootstrap.zip for sync-scheduled, sync-upload and notify. Usually <repo>/target/lambda."
  type        = string

  validation {
    condition = alltrue([
      for f in ["sync-scheduled", "sync-upload", "notify"] : fileexists("${var.lambda_zip_dir}/${f}/bootstrap.zip")
    ])
    error_message = "lambda_zip_dir must hold sync-scheduled/bootstrap.zip, sync-upload/bootstrap.zip and notify/bootstrap.zip: run `make build` first."
  }
}

variable "bucket_name" {
  description = "Name of the pipefy-sync bucket (config/, state/, reports/). Default: <name>-<account id>-<region>."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_name == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name: 3-63 characters, lowercase letters, digits, '.' and '-'."
  }
}

variable "force_destroy_bucket" {
  description = "Let `terraform destroy` delete the pipefy-sync bucket with its state and reports. Keep false outside throwaway environments: the state is what makes runs exactly-once."
  type        = bool
  default     = false
}

variable "report_retention_days" {
  description = "Days after which run reports (reports/<destination>/<date>/<run-id>/) and per-row results (reports/<destination>/results/<date>/) expire."
  type        = number
  default     = 90

  validation {
    condition     = var.report_retention_days >= 1 && floor(var.report_retention_days) == var.report_retention_days
    error_message = "report_retention_days must be a whole number of days, at least 1."
  }
}

variable "results_table_enabled" {
  description = "Define the Glue catalog table pipefy_sync_results over the runs' per-row results (reports/<destination>/results/<YYYY-MM-DD>/), for Athena (docs/results.md). false: neither the table nor its database is created."
  type        = bool
  default     = true
}

variable "results_database_name" {
  description = "Glue database of the results table. A second deployment in the same account and region needs a name of its own."
  type        = string
  default     = "pipefy_sync"

  validation {
    # Athena takes lowercase letters, digits and underscores in database names unquoted.
    condition     = can(regex("^[a-z0-9_]{1,255}$", var.results_database_name))
    error_message = "results_database_name must be 1-255 characters: lowercase letters, digits and '_'."
  }
}

variable "noncurrent_version_retention_days" {
  description = "Days a replaced or deleted object version (state manifests, config files, reports) is kept, for recovery, before it expires."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_retention_days >= 1 && floor(var.noncurrent_version_retention_days) == var.noncurrent_version_retention_days
    error_message = "noncurrent_version_retention_days must be a whole number of days, at least 1."
  }
}

variable "log_retention_days" {
  description = "Retention of the functions' CloudWatch log groups, in days (one of the values CloudWatch Logs accepts; 0 = never expire)."
  type        = number
  default     = 365

  validation {
    condition     = contains([0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of 0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653."
  }
}

variable "log_level" {
  description = "Application log level of the functions (Lambda sets AWS_LAMBDA_LOG_LEVEL from it)."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"], var.log_level)
    error_message = "log_level must be one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL."
  }
}

variable "sync_memory_size" {
  description = "Memory of sync-scheduled and sync-upload, in MB (CPU grows with it; Parquet decoding and gzip like more)."
  type        = number
  default     = 1024

  validation {
    condition     = var.sync_memory_size >= 128 && var.sync_memory_size <= 10240 && floor(var.sync_memory_size) == var.sync_memory_size
    error_message = "sync_memory_size must be a whole number of MB between 128 and 10240."
  }
}

variable "sync_ephemeral_storage_size" {
  description = "/tmp size of sync-scheduled and sync-upload, in MB: Parquet files are spilled there to be read by row group."
  type        = number
  default     = 2048

  validation {
    condition     = var.sync_ephemeral_storage_size >= 512 && var.sync_ephemeral_storage_size <= 10240 && floor(var.sync_ephemeral_storage_size) == var.sync_ephemeral_storage_size
    error_message = "sync_ephemeral_storage_size must be a whole number of MB between 512 and 10240."
  }
}

variable "time_budget_seconds" {
  description = "PIPEFY_SYNC_TIME_BUDGET_SECONDS: a sync run stops at a window boundary after this many seconds and hands the rest off to a new invocation. The functions time out at 900 s; the difference is the margin for the last window, the checkpoint and the hand-off."
  type        = number
  default     = 840

  validation {
    condition     = var.time_budget_seconds >= 60 && var.time_budget_seconds <= 870 && floor(var.time_budget_seconds) == var.time_budget_seconds
    error_message = "time_budget_seconds must be a whole number between 60 and 870 (at least 30 s below the 900 s timeout)."
  }
}

variable "allowed_pipefy_hosts" {
  description = "PIPEFY_SYNC_ALLOWED_HOSTS: hosts besides api.pipefy.com and app.pipefy.com that may receive the Pipefy token, such as a single-tenant Pipefy domain. A destination whose endpoint or token.oauth_url names any other host fails before any request carries the token."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for h in var.allowed_pipefy_hosts : can(regex("^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$", h))])
    error_message = "allowed_pipefy_hosts takes host names only (no scheme, port or path), e.g. [\"pipefy.example.com\"]."
  }
}

variable "notify_memory_size" {
  description = "Memory of notify, in MB."
  type        = number
  default     = 256

  validation {
    condition     = var.notify_memory_size >= 128 && var.notify_memory_size <= 10240 && floor(var.notify_memory_size) == var.notify_memory_size
    error_message = "notify_memory_size must be a whole number of MB between 128 and 10240."
  }
}

variable "notify_timeout_seconds" {
  description = "Timeout of notify, in seconds."
  type        = number
  default     = 60

  validation {
    condition     = var.notify_timeout_seconds >= 3 && var.notify_timeout_seconds <= 900 && floor(var.notify_timeout_seconds) == var.notify_timeout_seconds
    error_message = "notify_timeout_seconds must be a whole number between 3 and 900."
  }
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of the functions' EMF metrics (PIPEFY_SYNC_METRICS_NAMESPACE); the RowsFailed alarms watch it."
  type        = string
  default     = "PipefySync"

  validation {
    condition     = can(regex("^[A-Za-z0-9._/#:-]{1,255}$", var.metrics_namespace)) && !startswith(var.metrics_namespace, "AWS/")
    error_message = "metrics_namespace must be 1-255 characters of letters, digits and . _ / # : -, and must not start with AWS/."
  }
}

variable "sync_reserved_concurrency" {
  description = "Reserved concurrency of each sync function: a ceiling on runaway hand-off chains and upload bursts (the lease serialises runs of one destination anyway). -1 reserves nothing, which accounts whose concurrency quota is still 10 need."
  type        = number
  default     = 10

  validation {
    condition     = var.sync_reserved_concurrency == -1 || (var.sync_reserved_concurrency >= 1 && floor(var.sync_reserved_concurrency) == var.sync_reserved_concurrency)
    error_message = "sync_reserved_concurrency must be -1 (no reservation) or a whole number of at least 1."
  }
}

variable "notify_reserved_concurrency" {
  description = "Reserved concurrency of notify (-1: no reservation)."
  type        = number
  default     = 2

  validation {
    condition     = var.notify_reserved_concurrency == -1 || (var.notify_reserved_concurrency >= 1 && floor(var.notify_reserved_concurrency) == var.notify_reserved_concurrency)
    error_message = "notify_reserved_concurrency must be -1 (no reservation) or a whole number of at least 1."
  }
}

variable "async_maximum_event_age_seconds" {
  description = "How long Lambda keeps retrying an asynchronous event (schedule, upload, hand-off, notification) before it gives up and sends it to the failure destination."
  type        = number
  default     = 3600

  validation {
    condition     = var.async_maximum_event_age_seconds >= 60 && var.async_maximum_event_age_seconds <= 21600
    error_message = "async_maximum_event_age_seconds must be between 60 and 21600."
  }
}

variable "notify_maximum_retry_attempts" {
  description = "Retries of a failed notify invocation (0-2) before the event goes to the dead-letter queue."
  type        = number
  default     = 2

  validation {
    condition     = contains([0, 1, 2], var.notify_maximum_retry_attempts)
    error_message = "notify_maximum_retry_attempts must be 0, 1 or 2."
  }
}

variable "scheduler_maximum_retry_attempts" {
  description = "Retries of EventBridge Scheduler when it cannot invoke sync-scheduled (throttling, service errors) before the event goes to the scheduler dead-letter queue."
  type        = number
  default     = 3

  validation {
    condition     = var.scheduler_maximum_retry_attempts >= 0 && var.scheduler_maximum_retry_attempts <= 185 && floor(var.scheduler_maximum_retry_attempts) == var.scheduler_maximum_retry_attempts
    error_message = "scheduler_maximum_retry_attempts must be a whole number between 0 and 185."
  }
}

variable "scheduler_maximum_event_age_seconds" {
  description = "How long EventBridge Scheduler keeps trying to deliver one scheduled run."
  type        = number
  default     = 3600

  validation {
    condition     = var.scheduler_maximum_event_age_seconds >= 60 && var.scheduler_maximum_event_age_seconds <= 86400
    error_message = "scheduler_maximum_event_age_seconds must be between 60 and 86400."
  }
}

variable "existing_secret_arns" {
  description = "Secrets that already exist: secret name as written in the destination files (token.secret) or in slack_webhook_secret_name -> its ARN. Every other secret name is created by the module (empty; put the value with `aws secretsmanager put-secret-value`). Secret ids written as ARNs in the destination files are always used as they are."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for arn in values(var.existing_secret_arns) : can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", arn))])
    error_message = "Every value of existing_secret_arns must be a Secrets Manager secret ARN."
  }
}

variable "secret_recovery_window_days" {
  description = "Recovery window of the secrets the module creates, in days (0 deletes at once, so a destroyed deployment can be re-created under the same secret names)."
  type        = number
  default     = 7

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or between 7 and 30."
  }
}

variable "slack_webhook_secret_name" {
  description = "Secrets Manager secret (name) holding the Slack incoming-webhook URL that notify posts run summaries to. null: notify only logs (PIPEFY_SYNC_SLACK_WEBHOOK_SECRET stays unset)."
  type        = string
  default     = null

  validation {
    condition     = var.slack_webhook_secret_name == null || can(regex("^[A-Za-z0-9/_+=.@-]{1,512}$", var.slack_webhook_secret_name))
    error_message = "slack_webhook_secret_name must be a Secrets Manager secret name (letters, digits and / _ + = . @ -)."
  }
}

variable "report_link_expiry_hours" {
  description = "Hours the run page links in notify's Slack messages stay valid (presigned S3 URLs, signed with notify's role: a link also ends when the role session that signed it does)."
  type        = number
  default     = 168

  validation {
    condition     = var.report_link_expiry_hours >= 1 && var.report_link_expiry_hours <= 168 && floor(var.report_link_expiry_hours) == var.report_link_expiry_hours
    error_message = "report_link_expiry_hours must be a whole number from 1 to 168 (S3 signs links for at most 7 days)."
  }
}

variable "source_kms_key_arns" {
  description = "KMS keys the source buckets or existing secrets are encrypted with (customer managed keys only; SSE-S3 and aws/* keys need nothing). The functions get kms:Decrypt on them."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.source_kms_key_arns : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", arn))])
    error_message = "Every entry of source_kms_key_arns must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)."
  }
}

variable "alarm_actions" {
  description = "ARNs (SNS topics, ...) the CloudWatch alarms notify when they go to ALARM and back to OK."
  type        = list(string)
  default     = []
}

variable "tracing_mode" {
  description = "X-Ray tracing of the functions: PassThrough (trace only when the caller samples) or Active."
  type        = string
  default     = "PassThrough"

  validation {
    condition     = contains(["PassThrough", "Active"], var.tracing_mode)
    error_message = "tracing_mode must be PassThrough or Active."
  }
}

variable "kms_key_deletion_window_days" {
  description = "Waiting period before the module's KMS key is deleted after `terraform destroy`, in days."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_key_deletion_window_days >= 7 && var.kms_key_deletion_window_days <= 30
    error_message = "kms_key_deletion_window_days must be between 7 and 30."
  }
}

variable "tags" {
  description = "Tags added to every resource the module creates."
  type        = map(string)
  default     = {}
}
