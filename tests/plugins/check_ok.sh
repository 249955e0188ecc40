#!/bin/sh
# A healthy plugin: one line of text, perfdata in several units.
echo "OK - all good | 'time'=12ms;100;200;0; size=2MB load=0.5;1;2"
exit 0
