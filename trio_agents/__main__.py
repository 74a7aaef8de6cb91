"""``python -m trio_agents``: the trio-agents command line."""

from .cli import main

main()
