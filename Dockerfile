# One image for the four servers and Locust (docker-compose.yml picks the command).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY servers ./servers
COPY lab ./lab
COPY loadtests ./loadtests
COPY db ./db
COPY openapi.yaml ./
RUN pip install --no-cache-dir -c constraints.txt .
# Servers listen on 8001-8004; Locust's web UI on 8089 and its master on 5557.
EXPOSE 8001 8002 8003 8004 8089 5557
CMD ["python", "-m", "servers", "asyncio", "--bind", "0.0.0.0"]
