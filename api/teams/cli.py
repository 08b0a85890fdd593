"""Operator commands for teams: `carbon-wallet team create FILE.json | list | add-department | rotate-join-code`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from api.clirun import read_json_object, run_with_pool

__all__ = ["COMMANDS", "add_commands", "run_command"]

COMMANDS = ("team",)


def add_commands(sub: Any) -> None:
    team = sub.add_parser("team", help="companies and organisations residents join, with their departments")
    ops = team.add_subparsers(dest="team_command", required=True)
    create = ops.add_parser("create", help="create a team from a JSON file (the fields of POST /v1/admin/teams)")
    create.add_argument("file", type=Path)
    ops.add_parser("list", help="every team with its join code and active members")
    department = ops.add_parser("add-department", help="add a department to a team")
    department.add_argument("team", help="the team's code")
    department.add_argument("code", help="the department's code, e.g. engineering")
    department.add_argument("name_zh")
    department.add_argument("name_en")
    rotate = ops.add_parser("rotate-join-code", help="give a team a new join code (the old one stops working)")
    rotate.add_argument("team", help="the team's code")


def _show(team: dict[str, Any]) -> None:
    print(f"{team['id']:>5} {team['code']:<28} {team['kind']:<12} join code {team['join_code']}  "
          f"{team['member_count']} members  {team['name_zh']} / {team['name_en']}"
          + (f"  ({team['city']})" if team["city"] else ""))
    for d in team["departments"]:
        print(f"{'':>6}- {d['code']:<26} {d['member_count']} members  {d['name_zh']} / {d['name_en']}")


async def _team(args: argparse.Namespace) -> int:
    from gamification.teams import service

    command = args.team_command
    if command == "create":
        _show(await service.create_team(read_json_object(args.file)))
    elif command == "list":
        for team in await service.list_teams():
            _show(team)
    elif command == "add-department":
        team_id = await service.team_id_for_code(args.team)
        _show(await service.add_department(team_id, {"code": args.code, "name_zh": args.name_zh,
                                                     "name_en": args.name_en}))
    else:
        _show(await service.rotate_join_code(await service.team_id_for_code(args.team)))
    return 0


def run_command(args: argparse.Namespace, database_url: str) -> int:
    return run_with_pool(database_url, lambda: _team(args))
