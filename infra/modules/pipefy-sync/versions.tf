terraform {
  # 1.5: check blocks and startswith/endswith (used by destinations.tf).
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.40: logging_config on aws_lambda_function and Scheduler kms_key_arn are both present;
      # 7.x is unknown territory.
      version = ">= 5.40, < 7.0"
    }
  }
}
