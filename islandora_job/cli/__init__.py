"""The ``islandora-job`` command. ``main`` assembles the sub-commands that the sibling modules define."""
