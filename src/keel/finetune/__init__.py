"""LoRA fine-tuning jobs, in the OpenAI fine-tuning API's shape, that end as a new model version."""
