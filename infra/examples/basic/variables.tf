variable "region" {
  description = "AWS region to deploy to (the source bucket of the destination files must be in it for S3 notifications)."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as us-east-1."
  }
}

variable "name" {
  description = "Name prefix of the deployment's resources."
  type        = string
  default     = "pipefy-sync"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}$", var.name))
    error_message = "name must be 1-31 characters: lowercase letters, digits and '-', starting with a letter."
  }
}

variable "lambda_zip_dir" {
  description = "Where `make build` left the zips (<dir>/<function>/bootstrap.zip). The default is the repository's target/lambda when applying from infra/examples/basic."
  type        = string
  default     = "../../../target/lambda"

  validation {
    condition     = length(var.lambda_zip_dir) > 0
    error_message = "lambda_zip_dir must not be empty."
  }
}

variable "slack_webhook_secret_name" {
  description = "Secrets Manager secret for the Slack incoming-webhook URL of notify; null: notify only logs."
  type        = string
  default     = null

  validation {
    condition     = var.slack_webhook_secret_name == null || can(regex("^[A-Za-z0-9/_+=.@-]{1,512}$", var.slack_webhook_secret_name))
    error_message = "slack_webhook_secret_name must be null or a Secrets Manager secret name (letters, digits and / _ + = . @ -)."
  }
}

variable "existing_secret_arns" {
  description = "Secrets that already exist, by the name the destination files use -> ARN; other secrets are created empty."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for arn in values(var.existing_secret_arns) : startswith(arn, "arn:")])
    error_message = "Every value of existing_secret_arns must be an ARN."
  }
}

variable "alarm_actions" {
  description = "SNS topic ARNs the alarms notify."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.alarm_actions : startswith(arn, "arn:")])
    error_message = "Every entry of alarm_actions must be an ARN."
  }
}

variable "event_bus_name" {
  description = "EventBridge bus (name in this account and region, or ARN) the sync functions put their run started / run completed / run failed events on; null: no events."
  type        = string
  default     = null

  validation {
    condition     = var.event_bus_name == null || can(regex("^\\S+$", var.event_bus_name))
    error_message = "event_bus_name must be null or an event bus name or ARN (the module checks its form)."
  }
}

variable "force_destroy_bucket" {
  description = "Let `terraform destroy` delete the bucket with its state and reports (throwaway environments only)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags of every resource (provider default_tags)."
  type        = map(string)
  default = {
    project = "pipefy-sync"
  }
}
