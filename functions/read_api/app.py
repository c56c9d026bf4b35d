"""GET /data and GET /fetch/status/{job_id}: reads only, so a light cold start."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from aggregator.api import ProxyResult, resolver, serve
from aggregator.observability import logger
from aggregator.routes import reads

app = resolver(reads.router)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> ProxyResult:
    return serve(app.resolve, event, context)
