"""An OpenAI-compatible backend simulator whose architecture profiles mimic real servers under load."""
