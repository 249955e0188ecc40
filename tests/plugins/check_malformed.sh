#!/bin/sh
echo "OK - some perfdata is broken | good=1 bad=abc ;;; 'unclosed=2 also_good=2.5s"
