# pipefy-sync end to end: the three functions from `make build`, the destinations of
# ./destinations, and everything they need. See infra/README.md for the deploy steps.

provider "aws" {
  region = var.region

  default_tags {
    tags = var.tags
  }
}

module "pipefy_sync" {
  source = "../../modules/pipefy-sync"

  name             = var.name
  lambda_zip_dir   = var.lambda_zip_dir
  destinations_dir = "${path.module}/destinations"

  slack_webhook_secret_name = var.slack_webhook_secret_name
  existing_secret_arns      = var.existing_secret_arns
  alarm_actions             = var.alarm_actions
  force_destroy_bucket      = var.force_destroy_bucket
  event_bus_name            = var.event_bus_name
}
