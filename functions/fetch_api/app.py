"""POST /fetch: a sync fetch now, or a job queued for the worker."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from aggregator.api import ProxyResult, resolver, serve
from aggregator.metrics import metrics
from aggregator.observability import logger
from aggregator.routes import fetches

app = resolver(fetches.router)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> ProxyResult:
    return serve(app.resolve, event, context)
