"""Teams: a resident's team and department, the operators' team admin API and CLI, the demo company."""
