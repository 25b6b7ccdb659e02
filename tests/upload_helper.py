"""A stand-in uploader for the tests, run by `kling` as a profile's `upload_command`.

Usage: upload_helper.py LOG ORIGIN BEHAVIOUR PATH [NAME] [MORE...]

It appends its arguments to LOG (one JSON list per run), then, as BEHAVIOUR says: `ok` PUTs the file to the
sandbox's upload route at ORIGIN/uploads/NAME (what `curl -T` does) and prints the URL it answers; `fail` says
why on stderr and exits 1; `silent` prints nothing; `not-a-url` prints a word where the URL should be.
"""

import json
import sys
import urllib.request


def main() -> int:
    log, origin, behaviour, path, *rest = sys.argv[1:]
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(json.dumps([path, *rest]) + "\n")
    if behaviour == "fail":
        print("upload failed", file=sys.stderr)
        print("An error occurred (NoSuchBucket): The specified bucket does not exist", file=sys.stderr)
        return 1
    if behaviour == "silent":
        return 0
    if behaviour == "not-a-url":
        print("uploaded")
        return 0
    with open(path, "rb") as handle:
        request = urllib.request.Request(f"{origin}/uploads/{rest[0]}", data=handle.read(), method="PUT")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as answer:
        print("upload: done")  # chatter before the URL, as `aws s3 cp` prints: the last line is the URL
        print(answer.read().decode().strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
