#!/bin/sh
# minio-init (deploy/compose.yaml): the buckets of the payband stack and one MinIO user per
# client, each allowed only its own bucket. Safe to run again: buckets are kept, policies and
# users are rewritten with the values of deploy/.env.
#
#   payband-lakefs   lakeFS' blockstore           user LAKEFS_S3_ACCESS_KEY_ID
#   mlflow           MLflow's artifacts           user MLFLOW_S3_ACCESS_KEY_ID
set -eu

# The alias "local" from the environment, so the root password is on no command line.
export MC_HOST_local="http://${MINIO_ROOT_USER}:${MINIO_ROOT_PASSWORD}@minio:9000"
mc mb --ignore-existing local/payband-lakefs local/mlflow

# policy NAME BUCKET: every S3 action on BUCKET and its objects, nothing else.
policy() {
    cat >"/tmp/$1.json" <<EOF
{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*"],
 "Resource": ["arn:aws:s3:::$2", "arn:aws:s3:::$2/*"]}]}
EOF
    mc admin policy create local "$1" "/tmp/$1.json"
}

# user ACCESS_KEY SECRET_KEY POLICY
user() {
    mc admin user add local "$1" "$2"
    # MinIO refuses to attach a policy the user already has: attach it only when missing, so
    # that any other failure stops this script.
    if mc admin user info local "$1" --json | grep -Eq "\"policyName\": ?\"([^\"]*,)?$3[,\"]"; then
        echo "policy $3 already attached to $1"
    else
        mc admin policy attach local "$3" --user "$1"
    fi
}

policy payband-lakefs payband-lakefs
policy payband-mlflow mlflow
user "$LAKEFS_S3_ACCESS_KEY_ID" "$LAKEFS_S3_SECRET_ACCESS_KEY" payband-lakefs
user "$MLFLOW_S3_ACCESS_KEY_ID" "$MLFLOW_S3_SECRET_ACCESS_KEY" payband-mlflow
echo "minio-init: buckets payband-lakefs and mlflow, users for lakeFS and MLflow ready"
