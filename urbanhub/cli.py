"""The ``urbanhub`` command."""

from __future__ import annotations

import typer
import uvicorn
from rich.console import Console

from urbanhub.config import get_settings

app = typer.Typer(help="Urbanhub: urban data platform with governance on the data path.",
                  no_args_is_help=True)
db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console(stderr=True)


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
          port: int = typer.Option(8000, help="TCP port to listen on.")) -> None:
    """Run the hub (database from URBANHUB_DATABASE_URL; schema upgraded on start)."""
    from urbanhub.api.app import create_app

    settings = get_settings()
    console.print(f"[bold]Urbanhub[/] on http://{host}:{port}  database: "
                  f"{_redacted(settings.database_url)}")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Create the schema or upgrade it to the latest revision."""
    from urbanhub.store.db import current_revision, make_engine, upgrade

    settings = get_settings()
    engine = make_engine(settings.database_url)
    before = current_revision(engine)
    upgrade(engine, revision)
    after = current_revision(engine)
    console.print(f"database {_redacted(settings.database_url)}: {before or 'empty'} -> {after}")


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    app()
