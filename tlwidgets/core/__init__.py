"""The headless engine of tlwidgets: torch and torchvision only, no widgets."""
