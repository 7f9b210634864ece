"""Echo flow: answers every message with the message itself."""

import flowrt


@flowrt.command("echo")
def echo(message):
    return {"command": "echo", "echo": message}


@flowrt.default
def anything(message):
    return {"echo": message}
