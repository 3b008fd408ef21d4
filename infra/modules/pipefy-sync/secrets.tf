# Secrets the functions read: the Pipefy token of each destination (token.secret) and the
# Slack webhook URL of notify. A secret id is resolved, in order:
#   an ARN in the destination file          -> used as it is
#   a name listed in existing_secret_arns   -> that ARN
#   any other name                          -> created here, empty; its value is put with
#                                              `aws secretsmanager put-secret-value`, so it
#                                              never passes through Terraform state.

locals {
  secret_ids = sort(distinct(concat(
    local.token_secret_ids,
    var.slack_webhook_secret_name == null ? [] : [var.slack_webhook_secret_name],
  )))

  created_secret_names = toset([
    for id in local.secret_ids : id
    if !startswith(id, "arn:") && !contains(keys(var.existing_secret_arns), id)
  ])

  secret_arns = {
    for id in local.secret_ids : id => (
      startswith(id, "arn:") ? id :
      contains(keys(var.existing_secret_arns), id) ? var.existing_secret_arns[id] :
      aws_secretsmanager_secret.this[id].arn
    )
  }

  # Secrets each function may read.
  function_secret_arns = {
    "sync-scheduled" = distinct([
      for d in values(local.destinations) : local.secret_arns[d.token_secret] if d.token_secret != null
    ])
    "sync-upload" = distinct([
      for d in values(local.upload_destinations) : local.secret_arns[d.token_secret] if d.token_secret != null
    ])
    "notify" = var.slack_webhook_secret_name == null ? [] : [local.secret_arns[var.slack_webhook_secret_name]]
  }

  slack_webhook_secret_arn = var.slack_webhook_secret_name == null ? null : local.secret_arns[var.slack_webhook_secret_name]
}

resource "aws_secretsmanager_secret" "this" {
  #checkov:skip=CKV2_AWS_57:Pipefy tokens and Slack webhook URLs are issued by those services; there is no API a rotation function could call to mint a new one.
  for_each = local.created_secret_names

  name                    = each.key
  description             = "pipefy-sync (${var.name}): ${each.key == var.slack_webhook_secret_name ? "Slack incoming-webhook URL for notify" : "Pipefy token (personal token, or JSON {client_id, client_secret} of a service account)"}"
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = var.secret_recovery_window_days
  tags                    = local.tags
}
