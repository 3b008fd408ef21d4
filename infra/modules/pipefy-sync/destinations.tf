# Destination files: the single source of truth. Terraform reads them here to derive
# schedules, S3 notifications, IAM scopes and secrets; bucket.tf uploads the very same files
# to s3://<bucket>/config/destinations/<name>.yaml, where the functions read them.
#
# This file must stay provider-free (only variables, locals and built-in functions):
# tests/infra/agreement.py copies it into a scratch folder and evaluates its locals with
# `terraform console` against example and hand-made destination folders.
#
# Field names follow shared/src/config/mod.rs: name, source.bucket/layer/table,
# trigger.schedule.expression/timezone, trigger.on_upload.suffixes, token.secret,
# sync.failed_rows_alert_threshold.

variable "destinations_dir" {
  description = "Folder holding the destination files (*.yaml / *.yml, one destination each). Every file is uploaded as config/destinations/<name>.yaml and drives schedules, S3 notifications and IAM scopes."
  type        = string

  validation {
    condition     = length(fileset(var.destinations_dir, "*.{yaml,yml}")) > 0
    error_message = "destinations_dir holds no *.yaml or *.yml file: there is nothing to deploy."
  }
}

locals {
  destination_paths = {
    for f in sort(fileset(var.destinations_dir, "*.{yaml,yml}")) : f => "${var.destinations_dir}/${f}"
  }

  # try(): a file that is not YAML becomes null and is reported by destination_errors with
  # its file name, instead of a bare yamldecode error.
  destination_docs = {
    for f, p in local.destination_paths : f => try(yamldecode(file(p)), null)
  }

  # The fields Terraform needs, one object per file. Missing or mistyped fields become null
  # (or their serde default) and are reported below.
  destination_list = [
    for f, doc in local.destination_docs : {
      file   = f
      path   = local.destination_paths[f]
      is_map = can(keys(doc))
      name   = try(tostring(doc.name), null)
      bucket = try(tostring(doc.source.bucket), null)
      layer  = try(tostring(doc.source.layer), null)
      table  = try(tostring(doc.source.table), null)
      # SourceConfig::prefix(): "<layer>/<table>/" with surrounding slashes trimmed.
      prefix              = try("${trim(tostring(doc.source.layer), "/")}/${trim(tostring(doc.source.table), "/")}/", null)
      schedule_expression = try(tostring(doc.trigger.schedule.expression), null)
      # serde default: "UTC".
      schedule_timezone = coalesce(try(tostring(doc.trigger.schedule.timezone), null), "UTC")
      # `on_upload:` (null) is None in serde: no upload trigger. `on_upload: {}` is an upload
      # trigger for any suffix.
      on_upload                   = try(doc.trigger.on_upload, null) != null
      suffixes                    = try([for s in doc.trigger.on_upload.suffixes : tostring(s)], [])
      token_secret                = try(tostring(doc.token.secret), null)
      failed_rows_alert_threshold = coalesce(try(tonumber(doc.sync.failed_rows_alert_threshold), null), 0)
      # Attachments read from S3 (`attach:` in a mapping entry; `attach:` alone is none): the
      # bucket (default the source's) and the prefix, "<prefix>/" or "" for the whole
      # bucket, as AttachSource::new in shared/src/mapping/attach.rs reads them.
      attach = [
        for m in try(values(doc.mapping), []) : {
          bucket = try(coalesce(try(tostring(m.attach.bucket), null), try(tostring(doc.source.bucket), null)), null)
          prefix = try(trim(tostring(m.attach.prefix), "/"), "") == "" ? "" : "${trim(tostring(m.attach.prefix), "/")}/"
        } if try(m.attach != null, false)
      ]
    }
  ]

  destination_files_by_name = {
    for d in local.destination_list : d.name => d.file... if d.name != null
  }

  # name -> fields. A duplicated name keeps its first file; destination_errors reports it.
  destinations_grouped = {
    for d in local.destination_list : d.name => d... if d.name != null
  }
  destinations = {
    for n, ds in local.destinations_grouped : n => ds[0]
  }

  scheduled_destinations = {
    for n, d in local.destinations : n => {
      expression = d.schedule_expression
      timezone   = d.schedule_timezone
    } if d.schedule_expression != null
  }

  upload_destinations = {
    for n, d in local.destinations : n => d if d.on_upload && d.bucket != null && d.prefix != null
  }

  # S3 filters: one (prefix, suffix) per suffix of each upload destination; no suffix: "",
  # meaning no filter_suffix. Identical filters of two destinations are one configuration:
  # sync-upload matches the object against every destination file anyway.
  upload_filters_all = distinct(flatten([
    for n, d in local.upload_destinations : [
      for s in(length(d.suffixes) > 0 ? d.suffixes : [""]) : {
        bucket = d.bucket
        prefix = d.prefix
        suffix = s
      }
    ]
  ]))

  # S3 refuses two configurations of one bucket whose prefixes and suffixes overlap (one is
  # a prefix / suffix of the other). A filter that another filter fully covers adds nothing
  # (same function, same events), so it is dropped; what still overlaps is an error.
  upload_filters = [
    for f in local.upload_filters_all : f if length([
      for g in local.upload_filters_all : g
      if g.bucket == f.bucket && g != f && startswith(f.prefix, g.prefix) && endswith(f.suffix, g.suffix)
    ]) == 0
  ]

  upload_filter_overlaps = flatten([
    for i, f in local.upload_filters : [
      for j, g in local.upload_filters :
      "bucket ${f.bucket}: S3 event filters overlap and cannot both exist: prefix \"${f.prefix}\" suffix \"${f.suffix}\" and prefix \"${g.prefix}\" suffix \"${g.suffix}\""
      if j > i && g.bucket == f.bucket &&
      (startswith(f.prefix, g.prefix) || startswith(g.prefix, f.prefix)) &&
      (endswith(f.suffix, g.suffix) || endswith(g.suffix, f.suffix))
    ]
  ])

  # bucket -> [{prefix, suffix}], what aws_s3_bucket_notification writes.
  upload_notifications = {
    for b in distinct([for f in local.upload_filters : f.bucket]) : b => [
      for f in local.upload_filters : { prefix = f.prefix, suffix = f.suffix } if f.bucket == b
    ]
  }

  # What each sync function may read: bucket -> the table prefixes and the attach
  # locations of its destinations' mappings. sync-scheduled runs any destination (schedules
  # and manual runs); sync-upload only those with an upload trigger.
  read_locations = {
    for f, ds in {
      "sync-scheduled" = values(local.destinations)
      "sync-upload"    = values(local.upload_destinations)
      } : f => flatten([
        for d in ds : concat(
          d.bucket != null && d.prefix != null ? [{ bucket = d.bucket, prefix = d.prefix }] : [],
          [for a in d.attach : a if a.bucket != null]
        )
    ])
  }
  source_access = {
    for f, locations in local.read_locations : f => {
      for b in distinct([for l in locations : l.bucket]) :
      b => distinct([for l in locations : l.prefix if l.bucket == b])
    }
  }

  # Secrets Manager secret ids (name or ARN) the destinations read their token from.
  token_secret_ids = sort(distinct([
    for d in values(local.destinations) : d.token_secret if d.token_secret != null
  ]))

  # Payloads sync-scheduled receives, built here (not inline) so tests/infra/agreement.py can
  # evaluate them. Their keys are serde fields of the payload struct in
  # shared/src/lambda/events.rs. Scheduler replaces <aws.scheduler.scheduled-time> with the
  # time the run was scheduled for (ISO 8601, UTC) and sends the rest as is.
  # Not jsonencode() of the whole object: it writes < and > as \u003c and \u003e, and
  # Scheduler only substitutes the literal text "<aws.scheduler.scheduled-time>".
  schedule_payloads = {
    for n in keys(local.scheduled_destinations) :
    n => "{\"destination\":${jsonencode(n)},\"scheduled_time\":\"<aws.scheduler.scheduled-time>\"}"
  }

  # Manual runs (outputs.run_commands): a run now, a dry run that reads, maps and reports
  # without writing to Pipefy, and a drift report (the destination read back, nothing
  # written to Pipefy).
  manual_payloads = {
    for n in keys(local.destinations) : n => {
      run     = jsonencode({ destination = n })
      dry_run = jsonencode({ destination = n, dry_run = true })
      drift   = jsonencode({ destination = n, drift = true })
    }
  }

  # Everything wrong with the folder, one message per problem; main.tf refuses to plan
  # while this list is not empty.
  destination_errors = concat(
    [for d in local.destination_list : "${d.file}: not a YAML mapping" if !d.is_map],
    [for d in local.destination_list : "${d.file}: name is missing" if d.is_map && d.name == null],
    [
      for d in local.destination_list :
      "${d.file}: name \"${d.name}\" must match [a-z0-9][a-z0-9_-]* and be at most 64 characters (it names S3 keys, the schedule and the alarms)"
      if d.name != null && !can(regex("^[a-z0-9][a-z0-9_-]{0,63}$", d.name))
    ],
    [
      for n, files in local.destination_files_by_name :
      "${join(", ", files)}: the name \"${n}\" is used by more than one file" if length(files) > 1
    ],
    [
      for d in local.destination_list :
      "${d.file}: source.bucket is missing: the Lambda functions read tables from S3 (source.path is for local runs)"
      if d.is_map && d.bucket == null
    ],
    [
      for d in local.destination_list : "${d.file}: source.layer and source.table are required"
      if d.is_map && (d.layer == null || d.table == null)
    ],
    [
      for d in local.destination_list :
      "${d.file}: token.secret is missing: the Lambda functions read the Pipefy token from Secrets Manager (token.env is for local runs)"
      if d.is_map && d.token_secret == null
    ],
    [
      for d in local.destination_list :
      "${d.file}: trigger.schedule.expression \"${d.schedule_expression}\" is not an EventBridge Scheduler cron(...) or rate(...) expression"
      if d.schedule_expression != null && !can(regex("^(cron|rate)\\(.+\\)$", d.schedule_expression))
    ],
    [
      for d in local.destination_list :
      "${d.file}: trigger.on_upload.suffixes must not contain an empty string (leave the list empty for any suffix)"
      if contains(d.suffixes, "")
    ],
    local.upload_filter_overlaps,
  )
}
