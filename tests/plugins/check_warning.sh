#!/bin/sh
echo "WARNING - queue is long | queue=120;100;500;0"
exit 1
