variable "environment" {
  type = string
}

variable "service" {
  type = string
}

output "id" {
  value = "${var.service}-${var.environment}"
}
