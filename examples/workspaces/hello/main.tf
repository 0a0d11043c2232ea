# A first workspace: a variable, a resource built into Terraform (no provider download), and
# outputs, one of them sensitive.

variable "name" {
  type        = string
  default     = "world"
  description = "Who to greet."
}

variable "api_token" {
  type      = string
  default   = "example-token-not-real"
  sensitive = true
}

resource "terraform_data" "greeting" {
  input = "hello, ${var.name}"
}

output "greeting" {
  value = terraform_data.greeting.output
}

output "token" {
  value     = var.api_token
  sensitive = true
}
