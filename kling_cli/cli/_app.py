"""The Typer applications. Command modules register on these when `kling_cli.cli` imports them."""

from __future__ import annotations

import typer

from kling_cli.errors import EXIT_CODE_MEANINGS

EXIT_CODES_EPILOG = "\b\nExit codes:\n" + "\n".join(
    f"  {int(code):>3}  {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items()
)

_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def new_app(help_text: str, **kwargs) -> typer.Typer:
    # Plain (non-rich) help: rich-formatted help costs ~60 ms per invocation, and kling runs in loops.
    return typer.Typer(
        help=help_text,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        add_completion=False,
        no_args_is_help=True,
        context_settings=_SETTINGS,
        **kwargs,
    )


app = new_app(
    "Generate Kling AI videos: submit tasks, wait for them, download the results.\n\n"
    "Try it without a key or credits: kling --profile sandbox submit t2v \"a red fox in the snow\" --wait --download videos",
    epilog=EXIT_CODES_EPILOG,
)
submit_app = new_app("Submit a paid generation task (prints its id on stdout).")
profile_app = new_app("Manage profiles (provider, base URL, credentials).")
sandbox_app = new_app("The built-in emulator of every provider dialect.")
callback_app = new_app("Check and receive the callbacks (webhooks) providers POST when a task ends.")

app.add_typer(submit_app, name="submit")
app.add_typer(profile_app, name="profile")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(callback_app, name="callback")
