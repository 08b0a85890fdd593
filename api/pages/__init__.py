"""The public pages (no login): cities, districts, communities, teams, partners and the methodology, rendered on
the server from the community aggregates and the public boards, in zh-CN and en, cached per process."""
