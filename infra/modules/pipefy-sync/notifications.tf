# S3 -> sync-upload for destinations with trigger.on_upload: one configuration per
# (prefix <layer>/<table>/, suffix) of each source bucket, computed in destinations.tf.
#
# aws_s3_bucket_notification owns ALL notifications of a bucket: a source bucket must not
# have notifications managed anywhere else (infra/README.md).

resource "aws_lambda_permission" "s3_invokes_sync_upload" {
  for_each = local.upload_notifications

  statement_id   = "s3-${replace(each.key, ".", "-")}"
  action         = "lambda:InvokeFunction"
  function_name  = aws_lambda_function.this["sync-upload"].function_name
  principal      = "s3.amazonaws.com"
  source_arn     = "arn:${local.partition}:s3:::${each.key}"
  source_account = local.account_id
}

resource "aws_s3_bucket_notification" "source" {
  for_each = local.upload_notifications

  bucket = each.key

  dynamic "lambda_function" {
    for_each = each.value
    content {
      id                  = "${var.name}-${substr(sha1("${lambda_function.value.prefix}|${lambda_function.value.suffix}"), 0, 16)}"
      lambda_function_arn = aws_lambda_function.this["sync-upload"].arn
      events              = ["s3:ObjectCreated:*"]
      filter_prefix       = lambda_function.value.prefix
      # No suffix in the destination file: no suffix filter at all.
      filter_suffix = lambda_function.value.suffix == "" ? null : lambda_function.value.suffix
    }
  }

  # S3 tests the destination when the configuration is written: the permission must exist.
  depends_on = [aws_lambda_permission.s3_invokes_sync_upload, terraform_data.destinations_check]
}
