from __future__ import annotations

from pathlib import Path

from piccolo.conf.apps import AppConfig

from gamification.friends.tables import Block, FriendCode, FriendRequest, Friendship
from gamification.leaderboards.tables import Exclusion
from gamification.teams.tables import Department, Team, TeamMember

APP_CONFIG = AppConfig(
    app_name="gamification",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[Friendship, FriendRequest, FriendCode, Block, Team, Department, TeamMember, Exclusion],
    migration_dependencies=["wallet.piccolo_app"],
    commands=[],
)
