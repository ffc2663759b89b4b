#!/usr/bin/env python3
"""Writes the load test's report template: the fixture app's .ips with the crashed thread
grown to 60 frames (its real frames repeated) and INCIDENT_PLACEHOLDER as the incident
id, which the load script replaces per request so that every report is a new crash.
The report's time is now (UTC), as a real device's recent crash: the crash day leads
the store's dedup key, so the fixture's fixed date would key every report in the past."""
import datetime
import json
import sys

src, dst = sys.argv[1], sys.argv[2]
text = open(src).read()
header, body = text.split("\n", 1)
header = json.loads(header)
body = json.loads(body)
header["incident_id"] = "INCIDENT_PLACEHOLDER"
body["incident"] = "INCIDENT_PLACEHOLDER"
now = datetime.datetime.now(datetime.timezone.utc)
header["timestamp"] = now.strftime("%Y-%m-%d %H:%M:%S.%f")[:-4] + " +0000"
body["captureTime"] = now.strftime("%Y-%m-%d %H:%M:%S.%f")[:-2] + " +0000"
frames = body["threads"][0]["frames"]
# Keep the crash site first, then callers (return addresses) until 60 frames.
callers = frames[1:]
grown = [frames[0]]
while len(grown) < 60:
    grown.append(callers[(len(grown) - 1) % len(callers)])
body["threads"][0]["frames"] = grown
with open(dst, "w") as out:
    out.write(json.dumps(header) + "\n" + json.dumps(body, indent=2))
