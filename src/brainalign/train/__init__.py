"""DINOv3-style self-supervised training: LightningModule, losses, heads, data, schedules."""
