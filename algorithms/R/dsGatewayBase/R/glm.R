# Generalised linear models, fitted by the client with IRLS over the studies:
# glmDS1 (set-up and checks), glmDS2 (one iteration: information matrix, score
# vector, deviance).

# glm() with a single IRLS iteration and the model matrix kept; only the
# "did not converge" warning that maxit = 1 always causes is silenced.
.glm_one_step <- function(formula, family, data) {
  withCallingHandlers(
    stats::glm(formula, family = family, x = TRUE, control = stats::glm.control(maxit = 1),
               contrasts = NULL, data = data),
    warning = function(w) {
      if (grepl("did not converge", conditionMessage(w), fixed = TRUE)) {
        invokeRestart("muffleWarning")
      }
    }
  )
}

.glm_formula <- function(formula, envir) {
  if (is.character(formula)) formula <- stats::as.formula(formula, env = envir)
  if (!inherits(formula, "formula")) {
    stop("FAILED: formula must be a model formula", call. = FALSE)
  }
  formula
}

.glm_family <- function(family) {
  if (is.character(family)) {
    if (length(family) != 1L ||
        !(family %in% c("gaussian", "binomial", "poisson", "Gamma", "inverse.gaussian",
                        "quasi", "quasibinomial", "quasipoisson"))) {
      stop("FAILED: family must be the name of a glm family, e.g. 'gaussian'", call. = FALSE)
    }
    family <- get(family, mode = "function", envir = asNamespace("stats"))
  }
  if (is.function(family)) family <- family()
  if (!inherits(family, "family")) stop("FAILED: family is not a glm family", call. = FALSE)
  family
}

# A variable named by a transmitted string, or NULL.
.glm_vector <- function(name, envir, argname) {
  if (is.null(name)) return(NULL)
  as.vector(.get_object(name, envir, argname))
}

# 1 when the vector is binary with a category seen fewer than nfilter.tab times.
.binary_invalid <- function(v, nfilter.tab) {
  v <- v[stats::complete.cases(v)]
  if (length(unique(v)) != 2L) return(0)
  counts <- table(v)
  as.numeric(min(counts[counts >= 1]) < nfilter.tab)
}

#' Set-up of ds.glm (aggregate): model dimensions and disclosure checks.
#'
#' `formula` (a formula, variables as D$x or as columns of `data`), `family` (e.g.
#' "gaussian"), `weights`, `offset`, `data` (names as strings, or NULL). Returns
#' list(dimX, coef.names, y.invalid, Xpar.invalid, w.invalid, o.invalid,
#' glm.saturation.invalid, errorMessage) where errorMessage is "No errors" or
#' "STUDY DATA OR APPLIED MODEL INVALID FOR THIS SOURCE". Checks: parameters
#' more than nfilter.glm times the observations; y, a column of X, the weights or
#' the offset binary with a category below nfilter.tab.
glmDS1 <- function(formula, family, weights, offset, data) {
  nfilter.tab <- .nfilter("nfilter.tab")
  nfilter.glm <- .nfilter("nfilter.glm")
  envir <- parent.frame()
  data.table <- if (is.null(data)) NULL else .get_object(data, envir, "data")
  formula <- .glm_formula(formula, envir)
  fit <- .glm_one_step(formula, .glm_family(family), data.table)
  X <- as.matrix(fit$x)
  y <- as.vector(fit$y)
  dimX <- dim(X)
  glm.saturation.invalid <- as.numeric(dimX[2] > nfilter.glm * dimX[1])
  y.invalid <- .binary_invalid(y, nfilter.tab)
  Xpar.invalid <- vapply(seq_len(dimX[2]), function(j) .binary_invalid(X[, j], nfilter.tab),
                         numeric(1))
  w <- .glm_vector(weights, envir, "weights")
  o <- .glm_vector(offset, envir, "offset")
  w.invalid <- if (is.null(w)) 0 else .binary_invalid(w, nfilter.tab)
  o.invalid <- if (is.null(o)) 0 else .binary_invalid(o, nfilter.tab)
  invalid <- y.invalid > 0 || w.invalid > 0 || o.invalid > 0 || sum(Xpar.invalid) > 0 ||
    glm.saturation.invalid > 0
  list(dimX = dimX, coef.names = names(fit$coefficients), y.invalid = y.invalid,
       Xpar.invalid = Xpar.invalid, w.invalid = w.invalid, o.invalid = o.invalid,
       glm.saturation.invalid = glm.saturation.invalid,
       errorMessage = if (invalid) "STUDY DATA OR APPLIED MODEL INVALID FOR THIS SOURCE"
                      else "No errors")
}

#' One IRLS iteration of ds.glm (aggregate).
#'
#' `beta.vect`: the current coefficients, comma separated. Returns list(family,
#' info.matrix = X'WX, score.vect = X'Wz, numsubs, dev, Nvalid, Nmissing, Ntotal,
#' disclosure.risk, errorMessage2). The disclosure checks of glmDS1 are repeated on
#' the rows actually used; if any fails, info.matrix and score.vect are both
#' replaced by NA and disclosure.risk is 1.
glmDS2 <- function(formula, family, beta.vect, offset, weights, dataName) {
  nfilter.tab <- .nfilter("nfilter.tab")
  nfilter.glm <- .nfilter("nfilter.glm")
  envir <- parent.frame()
  data.df <- if (is.null(dataName)) NULL else .get_object(dataName, envir, "dataName")
  formula <- .glm_formula(formula, envir)

  # counts over the model's variables (y and covariates, before weights/offset)
  mf <- stats::model.frame(formula, data = data.df, na.action = stats::na.pass)
  yx.complete <- stats::complete.cases(mf)
  Ntotal <- nrow(mf)
  Nvalid <- sum(yx.complete)
  Nmissing <- Ntotal - Nvalid

  fit <- .glm_one_step(formula, .glm_family(family), data.df)
  f <- fit$family
  X <- as.matrix(fit$x)
  y <- as.vector(fit$y)

  # weights and offset on the rows glm kept, then drop rows where they are missing
  w.all <- .glm_vector(weights, envir, "weights")
  o.all <- .glm_vector(offset, envir, "offset")
  w <- if (is.null(w.all)) rep(1, length(y)) else w.all[yx.complete]
  o <- if (is.null(o.all)) rep(0, length(y)) else o.all[yx.complete]
  if (length(w) != length(y) || length(o) != length(y)) {
    stop("FAILED: weights and offset must have one value per observation", call. = FALSE)
  }
  keep <- !is.na(w) & !is.na(o)
  y <- y[keep]
  X <- X[keep, , drop = FALSE]
  w <- w[keep]
  o <- o[keep]

  beta <- as.numeric(unlist(strsplit(as.character(beta.vect), split = ",", fixed = TRUE)))
  if (length(beta) != ncol(X) || anyNA(beta)) {
    stop(paste0("FAILED: beta.vect must hold ", ncol(X), " numbers"), call. = FALSE)
  }
  eta <- drop(X %*% beta)
  if (!is.null(offset)) eta <- eta + o
  mu <- f$linkinv(eta)
  mu.eta <- f$mu.eta(eta)
  W <- as.vector(mu.eta^2 / f$variance(mu)) * w
  dev <- sum(f$dev.resids(y, mu, rep(1, length(y))) * w)
  info.matrix <- crossprod(X, W * X)
  score.vect <- crossprod(X, W * ((y - mu) / mu.eta))

  errors <- NULL
  risk <- FALSE
  if (ncol(X) > nfilter.glm * nrow(X)) {
    risk <- TRUE
    errors <- c(errors, paste0("ERROR: Model has too many parameters, there is a possible ",
                               "risk of disclosure - please simplify model"))
  }
  if (.binary_invalid(y, nfilter.tab) > 0) {
    risk <- TRUE
    errors <- c(errors, paste0("ERROR: y vector is binary with one category less than ",
                               "filter threshold for table cell size"))
  }
  if (any(vapply(seq_len(ncol(X)), function(j) .binary_invalid(X[, j], nfilter.tab),
                 numeric(1)) > 0)) {
    risk <- TRUE
    errors <- c(errors, paste0("ERROR: at least one column in X matrix is binary with one ",
                               "category less than filter threshold for table cell size"))
  }
  if (.binary_invalid(w, nfilter.tab) > 0) {
    risk <- TRUE
    errors <- c(errors, paste0("ERROR: w vector is binary with one category less than ",
                               "filter threshold for table cell size"))
  }
  if (.binary_invalid(o, nfilter.tab) > 0) {
    risk <- TRUE
    errors <- c(errors, paste0("ERROR: offset vector is binary with one category less than ",
                               "filter threshold for table cell size"))
  }
  if (risk) {
    info.matrix <- NA
    score.vect <- NA
    errors <- c(errors, paste0("MODEL FAILED: model or data invalid, info.matrix and ",
                               "score.vector destroyed"))
  } else {
    errors <- "No errors"
  }
  list(family = f, info.matrix = info.matrix, score.vect = score.vect, numsubs = length(y),
       dev = dev, Nvalid = Nvalid, Nmissing = Nmissing, Ntotal = Ntotal,
       disclosure.risk = as.numeric(risk), errorMessage2 = errors)
}
