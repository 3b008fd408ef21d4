# Lifecycle events: sync-scheduled and sync-upload put `run started`, `run completed` and
# `run failed` (source pipefy-sync) on the EventBridge bus named here, for other jobs to
# follow a run (infra/README.md, "Lifecycle events"; shared/src/engine/lifecycle.rs). The bus
# is the deployment's own: the module creates none.
#
# This file must stay provider-free (only variables, locals and built-in functions):
# tests/infra/agreement.py copies it into a scratch folder, with stand-ins for the account,
# region and partition locals of main.tf, and evaluates it with `terraform console`.

variable "event_bus_name" {
  description = "EventBridge event bus the sync functions put their lifecycle events on (source pipefy-sync; detail-types run started, run completed, run failed): a bus name, meaning that bus in the deployment's account and region, or a bus ARN (another account or region, whose bus policy must let the sync functions' roles put events). null: no events (PIPEFY_SYNC_EVENT_BUS stays unset)."
  type        = string
  default     = null

  validation {
    condition = var.event_bus_name == null || (
      can(regex("^[A-Za-z0-9._/-]{1,256}$", var.event_bus_name)) ||
      can(regex("^arn:aws[a-z-]*:events:[a-z0-9-]+:[0-9]{12}:event-bus/[A-Za-z0-9._/-]{1,256}$", var.event_bus_name))
    )
    error_message = "event_bus_name must be null, an event bus name (1-256 letters, digits and . _ / -) or an event bus ARN (arn:<partition>:events:<region>:<account>:event-bus/<name>)."
  }
}

locals {
  # The bus as an ARN: a name is that bus in this account and region. This one value is both
  # what the sync functions are told (PIPEFY_SYNC_EVENT_BUS, main.tf) and the only resource
  # their roles may put events on (iam.tf). null: no events, no permission.
  event_bus_arn = (
    var.event_bus_name == null ? null :
    startswith(var.event_bus_name, "arn:") ? var.event_bus_name :
    "arn:${local.partition}:events:${local.region}:${local.account_id}:event-bus/${var.event_bus_name}"
  )

  # The `source` of every lifecycle event (EVENT_SOURCE in shared/src/lambda/lifecycle.rs);
  # the roles may put events of no other source.
  event_source = "pipefy-sync"
}
