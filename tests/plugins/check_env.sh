#!/bin/sh
# Shows what the plugin sees of the environment: the config's variables, not the daemon's.
echo "OK - greeting=${GREETING:-unset} token=${RUNBOOKD_API_TOKEN:-unset} numeric=${LC_NUMERIC:-unset}"
