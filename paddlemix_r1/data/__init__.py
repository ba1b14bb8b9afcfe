"""Dataset readers, prompt templates and synthetic tasks in one row format (see ``synthetic``)."""
