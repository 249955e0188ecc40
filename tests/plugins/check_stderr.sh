#!/bin/sh
echo "usage: check_stderr.sh -H host" >&2
exit 3
