output "function_names" {
  description = "Lambda function names by function (sync-scheduled, sync-upload, notify)."
  value       = { for k, f in aws_lambda_function.this : k => f.function_name }
}

output "function_arns" {
  description = "Lambda function ARNs by function."
  value       = { for k, f in aws_lambda_function.this : k => f.arn }
}

output "role_arns" {
  description = "Execution role ARNs by function."
  value       = { for k, r in aws_iam_role.function : k => r.arn }
}

output "bucket_name" {
  description = "The pipefy-sync bucket: config/destinations/, state/, reports/<destination>/<date>/<run-id>/ and reports/<destination>/results/<date>/."
  value       = aws_s3_bucket.this.bucket
}

output "config_prefix" {
  description = "Prefix of the destination files in the bucket (PIPEFY_SYNC_CONFIG_PREFIX)."
  value       = local.config_prefix
}

output "destination_config_keys" {
  description = "S3 key of each destination's file, by destination name."
  value       = { for n, o in aws_s3_object.destination : n => o.key }
}

output "secret_arns" {
  description = "Secrets Manager ARN of every secret the functions read, by the name used in the destination files (or slack_webhook_secret_name)."
  value       = local.secret_arns
}

output "created_secret_names" {
  description = "Secrets the module created empty: put their values with `aws secretsmanager put-secret-value --secret-id <name> --secret-string ...`."
  value       = sort(tolist(local.created_secret_names))
}

output "kms_key_arn" {
  description = "The customer managed key of the deployment (bucket, secrets, logs, environment, schedules)."
  value       = aws_kms_key.this.arn
}

output "schedule_arns" {
  description = "EventBridge Scheduler schedule ARNs by destination."
  value       = { for n, s in aws_scheduler_schedule.destination : n => s.arn }
}

output "upload_notifications" {
  description = "S3 event filters by source bucket ({prefix, suffix}; suffix \"\" = no suffix filter)."
  value       = local.upload_notifications
}

output "dead_letter_queue_urls" {
  description = "SQS dead-letter queues: lambda (failed asynchronous events and notifications) and scheduler (undelivered schedules)."
  value = {
    lambda    = aws_sqs_queue.lambda_dlq.url
    scheduler = aws_sqs_queue.scheduler_dlq.url
  }
}

output "log_group_names" {
  description = "CloudWatch log groups by function."
  value       = { for k, g in aws_cloudwatch_log_group.function : k => g.name }
}

output "run_commands" {
  description = "AWS CLI command lines that start a run of each destination now (asynchronous, like a schedule): run, dry_run (reads, maps and reports without writing to Pipefy), and drift (reads the destination back and reports what people changed)."
  value = {
    for n in sort(keys(local.destinations)) : n => {
      run     = "aws lambda invoke --region ${local.region} --function-name ${aws_lambda_function.this["sync-scheduled"].function_name} --invocation-type Event --cli-binary-format raw-in-base64-out --payload '${local.manual_payloads[n].run}' /dev/stdout"
      dry_run = "aws lambda invoke --region ${local.region} --function-name ${aws_lambda_function.this["sync-scheduled"].function_name} --invocation-type Event --cli-binary-format raw-in-base64-out --payload '${local.manual_payloads[n].dry_run}' /dev/stdout"
      drift   = "aws lambda invoke --region ${local.region} --function-name ${aws_lambda_function.this["sync-scheduled"].function_name} --invocation-type Event --cli-binary-format raw-in-base64-out --payload '${local.manual_payloads[n].drift}' /dev/stdout"
    }
  }
}

output "results_table" {
  description = "The Glue catalog table over the runs' per-row results (docs/results.md): database, table, the S3 location of each partition, and a query to start from in Athena. null when results_table_enabled is false."
  value = var.results_table_enabled ? {
    database          = aws_glue_catalog_database.results[0].name
    table             = aws_glue_catalog_table.results[0].name
    location_template = local.results_location_template
    example_query     = "SELECT run_date, run_id, file, line, key, field, error_code, error_message FROM ${aws_glue_catalog_database.results[0].name}.${aws_glue_catalog_table.results[0].name} WHERE destination = '${try(sort(keys(local.destinations))[0], "<destination>")}' AND run_date >= cast(current_date - interval '7' day AS varchar) AND action IN ('failed', 'skipped', 'not_attempted') ORDER BY run_date, file, line"
  } : null
}

output "event_bus_arn" {
  description = "The EventBridge bus the sync functions put their lifecycle events on (PIPEFY_SYNC_EVENT_BUS), or null when event_bus_name is not set."
  value       = local.event_bus_arn
}
