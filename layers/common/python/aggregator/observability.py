"""The one Logger every function shares; the job id is its correlation id."""

from aws_lambda_powertools import Logger

logger = Logger(service="aggregator")
