# Alarms: a function failed, a destination's rows failed, something reached a dead-letter
# queue. They notify var.alarm_actions.

resource "aws_cloudwatch_metric_alarm" "function_errors" {
  for_each = local.functions

  alarm_name        = "${local.function_names[each.key]}-errors"
  alarm_description = "${local.function_names[each.key]} ended invocations with an error (see its log group)."
  namespace         = "AWS/Lambda"
  metric_name       = "Errors"
  dimensions = {
    FunctionName = local.function_names[each.key]
  }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = local.tags

  depends_on = [aws_lambda_function.this]
}

# The sync functions publish RowsFailed per destination in EMF (namespace
# PIPEFY_SYNC_METRICS_NAMESPACE, dimension Destination). The threshold is the destination's
# sync.failed_rows_alert_threshold (default 0: any failed row).
resource "aws_cloudwatch_metric_alarm" "rows_failed" {
  for_each = local.destinations

  alarm_name        = "${var.name}-${each.key}-rows-failed"
  alarm_description = "Destination ${each.key}: more than ${each.value.failed_rows_alert_threshold} rows failed; the run's report lists them under reports/${each.key}/."
  namespace         = var.metrics_namespace
  metric_name       = "RowsFailed"
  dimensions = {
    Destination = each.key
  }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = each.value.failed_rows_alert_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  for_each = {
    lambda    = aws_sqs_queue.lambda_dlq.name
    scheduler = aws_sqs_queue.scheduler_dlq.name
  }

  alarm_name        = "${each.value}-not-empty"
  alarm_description = "Events are waiting in ${each.value}: runs or notifications that were never delivered."
  namespace         = "AWS/SQS"
  metric_name       = "ApproximateNumberOfMessagesVisible"
  dimensions = {
    QueueName = each.value
  }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = local.tags
}
