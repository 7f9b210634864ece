"""Counter flow: keeps a count in memory (it starts again from zero when the flow restarts)."""

import flowrt

count = 0


@flowrt.command("increment")
def increment(message):
    global count
    count += int(message.get("by", 1))
    return {"count": count}


@flowrt.command("get")
def get(message):
    return {"count": count}


@flowrt.command("reset")
def reset(message):
    global count
    count = 0
    return {"count": count}
