output "function_names" {
  description = "Lambda function names."
  value       = module.pipefy_sync.function_names
}

output "function_arns" {
  description = "Lambda function ARNs."
  value       = module.pipefy_sync.function_arns
}

output "bucket_name" {
  description = "The pipefy-sync bucket (config/, state/, reports/)."
  value       = module.pipefy_sync.bucket_name
}

output "created_secret_names" {
  description = "Secrets created empty: put their values before the first run."
  value       = module.pipefy_sync.created_secret_names
}

output "run_commands" {
  description = "Start a run (or a dry run) of each destination by hand."
  value       = module.pipefy_sync.run_commands
}

output "dead_letter_queue_urls" {
  description = "Dead-letter queues to look at when the dead-letter alarms fire."
  value       = module.pipefy_sync.dead_letter_queue_urls
}

output "results_table" {
  description = "The Glue table over the runs' per-row results, for Athena (docs/results.md), with a query to start from."
  value       = module.pipefy_sync.results_table
}

output "event_bus_arn" {
  description = "The bus the lifecycle events go to, or null."
  value       = module.pipefy_sync.event_bus_arn
}
