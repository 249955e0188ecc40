#!/bin/sh
echo "CRITICAL - replica lag 95s | lag=95s;30;60"
exit 2
