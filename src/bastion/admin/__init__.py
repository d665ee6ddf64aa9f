"""Administration over HTTP, every route authorized by IAM."""
