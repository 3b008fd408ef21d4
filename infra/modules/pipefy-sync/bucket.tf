# The pipefy-sync bucket:
#   config/destinations/<name>.yaml  the destination files (uploaded below)
#   state/<destination>/             lease, ledger manifest and segments, pending work
#   reports/<destination>/<date>/<run-id>/  run summaries, run pages, failed rows
#   reports/<destination>/results/<date>/   per-row results of the runs started that day
#                                           (the Glue table of results.tf reads them)

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_18:Only the three functions write here, through their roles; CloudTrail data events are the audit trail if one is required. Access logs would need a second bucket per deployment.
  #checkov:skip=CKV_AWS_144:State and reports are rebuilt by the next run and config comes from the repository; cross-region replication is an account policy, not something this module should impose.
  #checkov:skip=CKV2_AWS_62:Nothing reacts to objects in this bucket; the source buckets are the ones with notifications (notifications.tf).
  bucket        = local.bucket_name
  force_destroy = var.force_destroy_bucket
  tags          = local.tags

  lifecycle {
    precondition {
      condition     = length(local.bucket_name) <= 63
      error_message = "The default bucket name ${local.bucket_name} is longer than 63 characters: set bucket_name or a shorter name."
    }
  }
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# Versioning: a bad config upload or a state write gone wrong can be rolled back.
resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.this.arn
    }
    # Bucket keys: one KMS call per object instead of per request (state is written often).
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  # Reports expire; their versions go soon after.
  rule {
    id     = "reports-expire"
    status = "Enabled"

    filter {
      prefix = local.report_prefix
    }

    expiration {
      days = var.report_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  # State manifests are replaced at every checkpoint: old versions pile up quickly.
  rule {
    id     = "state-old-versions"
    status = "Enabled"

    filter {
      prefix = local.state_prefix
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }
  }

  rule {
    id     = "config-old-versions"
    status = "Enabled"

    filter {
      prefix = "config/"
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }
  }

  # Whole bucket: deleted leases and pending files leave delete markers behind once their
  # versions expire; uploads interrupted by a timeout leave parts behind.
  rule {
    id     = "whole-bucket-cleanup"
    status = "Enabled"

    filter {
      prefix = ""
    }

    expiration {
      expired_object_delete_marker = true
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.this.arn, "${aws_s3_bucket.this.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id
  policy = data.aws_iam_policy_document.bucket.json

  depends_on = [aws_s3_bucket_public_access_block.this]
}

# The destination files, byte for byte: the functions read exactly what Terraform read.
# source_hash, not etag: with SSE-KMS the ETag S3 returns is not the file's MD5, so an
# etag argument would show a change on every plan.
resource "aws_s3_object" "destination" {
  for_each = local.destinations

  bucket       = aws_s3_bucket.this.id
  key          = "${local.config_prefix}${each.key}.yaml"
  source       = each.value.path
  source_hash  = filemd5(each.value.path)
  content_type = "application/yaml"
  kms_key_id   = aws_kms_key.this.arn
  tags         = local.tags

  depends_on = [
    terraform_data.destinations_check,
    aws_s3_bucket_server_side_encryption_configuration.this,
  ]
}
