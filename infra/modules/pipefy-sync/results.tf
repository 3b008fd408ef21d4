# The runs' per-row results as a table Athena can query (docs/results.md). The sync functions
# write them as JSON Lines, one folder per destination and start date (UTC) that holds only
# result parts (results_prefix in shared/src/report/mod.rs):
#   reports/<destination>/results/<YYYY-MM-DD>/<run-id>-part-00001.jsonl
# The table's partitions are projected from that layout (Athena partition projection): no
# crawler and no partition to add, a new day or a new destination is queryable at once.
# tests/infra/agreement.py checks the columns against the Rust structs, and the location
# template against the Rust layout.

locals {
  results_table_name = "pipefy_sync_results"

  # ${destination} and ${run_date} are Athena's, filled in per partition ($${ is HCL's escape).
  results_location_template = "s3://${local.bucket_name}/${local.report_prefix}$${destination}/results/$${run_date}/"
}

resource "aws_glue_catalog_database" "results" {
  count = var.results_table_enabled ? 1 : 0

  name        = var.results_database_name
  description = "pipefy-sync (${var.name}): per-row results of the runs (docs/results.md)"
  tags        = local.tags
}

resource "aws_glue_catalog_table" "results" {
  count = var.results_table_enabled ? 1 : 0

  name          = local.results_table_name
  database_name = aws_glue_catalog_database.results[0].name
  description   = "pipefy-sync (${var.name}): one row per row result of a run (what happened to a source row, and why), partitioned by destination and the run's start date"
  table_type    = "EXTERNAL_TABLE"

  parameters = {
    EXTERNAL       = "TRUE"
    classification = "json"

    "projection.enabled" = "true"
    # The deployment's destinations, as the destination files name them.
    "projection.destination.type"   = "enum"
    "projection.destination.values" = join(",", sort(keys(local.destinations)))
    # The run's start date, UTC. The range bounds the folders a query without a run_date
    # filter lists; parts older than report_retention_days have expired anyway.
    "projection.run_date.type"          = "date"
    "projection.run_date.format"        = "yyyy-MM-dd"
    "projection.run_date.range"         = "2024-01-01,NOW"
    "projection.run_date.interval"      = "1"
    "projection.run_date.interval.unit" = "DAYS"
    "storage.location.template"         = local.results_location_template
  }

  partition_keys {
    name    = "destination"
    type    = "string"
    comment = "The destination's name (its file's `name`)"
  }

  partition_keys {
    name    = "run_date"
    type    = "string"
    comment = "The day the run started, UTC, as YYYY-MM-DD"
  }

  storage_descriptor {
    # Where the reports are; each partition's folder comes from storage.location.template.
    location      = "s3://${local.bucket_name}/${local.report_prefix}"
    input_format  = "org.apache.hadoop.mapred.TextInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"

    ser_de_info {
      name                  = "pipefy-sync-results"
      serialization_library = "org.openx.data.jsonserde.JsonSerDe"
    }

    # The fields of a result line: run_id, then RowResult's (shared/src/report/mod.rs). The
    # optional ones are absent from a line, which reads as NULL.
    columns {
      name    = "run_id"
      type    = "string"
      comment = "The run the row belongs to (as in its summary.json)"
    }
    columns {
      name    = "file"
      type    = "string"
      comment = "Source file the row was read from"
    }
    columns {
      name    = "line"
      type    = "bigint"
      comment = "The row's line (1-based) or record number in its file"
    }
    columns {
      name    = "key"
      type    = "string"
      comment = "The row's key, when the destination has one and it could be read"
    }
    columns {
      name    = "action"
      type    = "string"
      comment = "created, updated, unchanged, skipped, failed, not_attempted, would_create, would_update, moved, deleted, would_remove, exists or recreated"
    }
    columns {
      name    = "id"
      type    = "string"
      comment = "Pipefy card or record id"
    }
    columns {
      name    = "error_code"
      type    = "string"
      comment = "Why the row failed (NOT_AN_OPTION, INVALID_VALUE, NOT_FOUND, PIPEFY_REJECTED, ...)"
    }
    columns {
      name    = "error_message"
      type    = "string"
      comment = "What went wrong, in words"
    }
    columns {
      name    = "field"
      type    = "string"
      comment = "The Pipefy field the failure is about"
    }
    columns {
      name    = "column"
      type    = "string"
      comment = "The table column the failure is about"
    }
    columns {
      name    = "kept_edits"
      type    = "array<struct<field:string,in_pipefy:string,in_table:string>>"
      comment = "Values people changed in Pipefy that the run kept (on_conflict: keep_edits)"
    }
  }
}
