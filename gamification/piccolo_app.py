from __future__ import annotations

from pathlib import Path

from piccolo.conf.apps import AppConfig

from gamification.challenges.tables import Challenge, ChallengeCursor, Participant
from gamification.community.tables import (
    CommunityCursor,
    CommunityDay,
    CommunityMember,
    CommunityParticipant,
    CommunityScope,
)
from gamification.friends.tables import Block, FriendCode, FriendRequest, Friendship
from gamification.leaderboards.tables import Exclusion
from gamification.progress.tables import BadgeAward, LevelReached, ProgressCursor
from gamification.teams.tables import Department, Team, TeamMember

APP_CONFIG = AppConfig(
    app_name="gamification",
    migrations_folder_path=str(Path(__file__).parent / "piccolo_migrations"),
    table_classes=[Friendship, FriendRequest, FriendCode, Block, Team, Department, TeamMember, Exclusion,
                   BadgeAward, ProgressCursor, LevelReached, Challenge, Participant, ChallengeCursor,
                   CommunityDay, CommunityParticipant, CommunityCursor, CommunityMember, CommunityScope],
    migration_dependencies=["wallet.piccolo_app"],
    commands=[],
)
