#!/bin/sh
echo "UNKNOWN - cannot reach the database"
exit 3
