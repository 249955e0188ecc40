#!/bin/sh
# Outside the plugin API (0-3): the daemon cannot tell what it means.
echo "something odd | odd=1"
exit 7
