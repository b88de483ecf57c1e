"""radvis core: configuration, wire format, transport and logging shared by every stage.

Upstream of drivers/, capture/, sync/ and learner/ (they import it; it imports none of them, except
`radvis.cli`, the entry point, which loads each package's subcommands lazily)."""
__version__ = "0.1.0"
