#!/bin/sh
# Never finishes in time; the sleep is a child in the plugin's process group.
echo "started"
sleep 30
echo "OK - too late"
