"""The networks of the stand-in repository."""
