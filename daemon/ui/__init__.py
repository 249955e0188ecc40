"""The console at /ui/: what runbookd sees and does, for people, and the forms to steer it.

Pages are rendered on the server (Jinja2) and read with JavaScript off:
at 3 AM the page must show the incident even where a script is blocked, and a server-rendered
page costs one request and no build step, keeping the wheel small (a few templates, one style
sheet, one script of a few KB; nothing from a CDN). The script only refreshes a page's live
part, polling a JSON endpoint with an ETag (a 304 when nothing changed). The
Content-Security-Policy allows nothing but this origin's own files: no inline script or style,
so an alert summary that smuggles markup is shown as text and could not run anyway.

Everything comes through daemon/api/port.py's `DaemonView` (the store; the leader's state
through api/acts.py), and every action is the API's own act, so a standby hands it to the
leader. Access is the API's tokens, exchanged for a session cookie (sessions.py).

The console's modules and Jinja2 load on its first request (daemon/api/app.py): a daemon
nobody browses does not carry them (about 4 MB).
"""
