# A workspace that uses a local module, and a resource replaced when `release` changes.

variable "release" {
  type    = string
  default = "v1"
}

module "label" {
  source      = "./modules/label"
  environment = "staging"
  service     = "web"
}

resource "terraform_data" "deployment" {
  input            = "${module.label.id}@${var.release}"
  triggers_replace = [var.release]
}

output "deployment" {
  value = terraform_data.deployment.output
}
