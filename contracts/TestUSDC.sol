// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";

/// @title TestUSDC
/// @notice A USDC-like token for local test chains: 6 decimals, EIP-712 domain {name: "USD Coin", version: "2"},
/// EIP-3009 transfer/receive/cancel authorizations and EIP-2612 permit, with Circle FiatToken revert reasons.
/// Signatures are checked with OpenZeppelin's SignatureChecker: ECDSA for EOAs (low-s, v of 27 or 28),
/// ERC-1271 for contract accounts. Only the minter fixed at construction can create tokens.
/// @dev The domain separator is computed for the current chain id and `address(this)`, so it stays correct after a
/// chain id change or when the runtime code is copied to another address (OpenZeppelin EIP712 rebuilds it then).
contract TestUSDC is ERC20, EIP712, Nonces {
    /// @notice keccak256("TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)")
    bytes32 public constant TRANSFER_WITH_AUTHORIZATION_TYPEHASH = keccak256(
        "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );

    /// @notice keccak256("ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)")
    bytes32 public constant RECEIVE_WITH_AUTHORIZATION_TYPEHASH = keccak256(
        "ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );

    /// @notice keccak256("CancelAuthorization(address authorizer,bytes32 nonce)")
    bytes32 public constant CANCEL_AUTHORIZATION_TYPEHASH =
        keccak256("CancelAuthorization(address authorizer,bytes32 nonce)");

    /// @notice keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)")
    bytes32 public constant PERMIT_TYPEHASH =
        keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)");

    /// @notice The only account allowed to call `mint`.
    address public immutable minter;

    /// @dev authorizer => EIP-3009 nonce => used or canceled
    mapping(address authorizer => mapping(bytes32 nonce => bool)) private _authorizationStates;

    /// @notice An EIP-3009 authorization was executed.
    event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);

    /// @notice An EIP-3009 authorization was canceled before use.
    event AuthorizationCanceled(address indexed authorizer, bytes32 indexed nonce);

    /// @param minter_ The account allowed to mint.
    constructor(address minter_) ERC20("USD Coin", "USDC") EIP712("USD Coin", "2") {
        minter = minter_;
    }

    /// @notice USDC uses 6 decimals.
    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice The EIP-712 domain version, "2" like Circle's FiatTokenV2.
    function version() external view returns (string memory) {
        return _EIP712Version();
    }

    /// @notice The EIP-712 domain separator for the current chain and this contract's address.
    function DOMAIN_SEPARATOR() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @notice Create `amount` tokens for `to`.
    /// @dev Reverts with "FiatToken: caller is not a minter" unless called by `minter`.
    function mint(address to, uint256 amount) external {
        require(msg.sender == minter, "FiatToken: caller is not a minter");
        _mint(to, amount);
    }

    /// @notice Whether the EIP-3009 `nonce` of `authorizer` has been used or canceled.
    function authorizationState(address authorizer, bytes32 nonce) external view returns (bool) {
        return _authorizationStates[authorizer][nonce];
    }

    /// @notice Execute a transfer signed by `from` (EIP-3009), signature given as v, r, s.
    /// @param from Payer (the authorizer)
    /// @param to Payee
    /// @param value Amount in atomic units
    /// @param validAfter The authorization is valid only when block.timestamp > validAfter
    /// @param validBefore The authorization is valid only when block.timestamp < validBefore
    /// @param nonce Unique 32-byte nonce chosen by the authorizer
    function transferWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external {
        _executeAuthorization(
            TRANSFER_WITH_AUTHORIZATION_TYPEHASH, from, to, value, validAfter, validBefore, nonce, abi.encodePacked(r, s, v)
        );
    }

    /// @notice Execute a transfer signed by `from` (EIP-3009), signature given as bytes (r||s||v, or ERC-1271 data).
    /// @param from Payer (the authorizer)
    /// @param to Payee
    /// @param value Amount in atomic units
    /// @param validAfter The authorization is valid only when block.timestamp > validAfter
    /// @param validBefore The authorization is valid only when block.timestamp < validBefore
    /// @param nonce Unique 32-byte nonce chosen by the authorizer
    /// @param signature The authorizer's signature
    function transferWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes calldata signature
    ) external {
        _executeAuthorization(
            TRANSFER_WITH_AUTHORIZATION_TYPEHASH, from, to, value, validAfter, validBefore, nonce, signature
        );
    }

    /// @notice Like `transferWithAuthorization`, but only the payee `to` may submit it (prevents front-running).
    /// @dev Reverts with "FiatTokenV2: caller must be the payee" when msg.sender != to.
    /// @param from Payer (the authorizer)
    /// @param to Payee, who must be the caller
    /// @param value Amount in atomic units
    /// @param validAfter The authorization is valid only when block.timestamp > validAfter
    /// @param validBefore The authorization is valid only when block.timestamp < validBefore
    /// @param nonce Unique 32-byte nonce chosen by the authorizer
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external {
        require(to == msg.sender, "FiatTokenV2: caller must be the payee");
        _executeAuthorization(
            RECEIVE_WITH_AUTHORIZATION_TYPEHASH, from, to, value, validAfter, validBefore, nonce, abi.encodePacked(r, s, v)
        );
    }

    /// @notice Like `transferWithAuthorization` (bytes form), but only the payee `to` may submit it.
    /// @dev Reverts with "FiatTokenV2: caller must be the payee" when msg.sender != to.
    /// @param from Payer (the authorizer)
    /// @param to Payee, who must be the caller
    /// @param value Amount in atomic units
    /// @param validAfter The authorization is valid only when block.timestamp > validAfter
    /// @param validBefore The authorization is valid only when block.timestamp < validBefore
    /// @param nonce Unique 32-byte nonce chosen by the authorizer
    /// @param signature The authorizer's signature
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes calldata signature
    ) external {
        require(to == msg.sender, "FiatTokenV2: caller must be the payee");
        _executeAuthorization(
            RECEIVE_WITH_AUTHORIZATION_TYPEHASH, from, to, value, validAfter, validBefore, nonce, signature
        );
    }

    /// @notice Cancel an unused authorization of `authorizer`, signature given as v, r, s.
    /// @param authorizer The account whose authorization is canceled
    /// @param nonce The nonce of that authorization
    function cancelAuthorization(address authorizer, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external {
        _cancelAuthorization(authorizer, nonce, abi.encodePacked(r, s, v));
    }

    /// @notice Cancel an unused authorization of `authorizer`, signature given as bytes.
    /// @param authorizer The account whose authorization is canceled
    /// @param nonce The nonce of that authorization
    /// @param signature The authorizer's signature
    function cancelAuthorization(address authorizer, bytes32 nonce, bytes calldata signature) external {
        _cancelAuthorization(authorizer, nonce, signature);
    }

    /// @notice Set `spender`'s allowance over `owner`'s tokens with `owner`'s EIP-2612 signature.
    /// @dev Reverts with "FiatTokenV2: permit is expired" after `deadline` and "EIP2612: invalid signature" on a bad
    /// signature; consumes `nonces(owner)`.
    /// @param owner Token owner (the signer)
    /// @param spender Account allowed to spend
    /// @param value New allowance
    /// @param deadline Last valid timestamp (inclusive)
    function permit(address owner, address spender, uint256 value, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external
    {
        require(deadline >= block.timestamp, "FiatTokenV2: permit is expired");
        bytes32 structHash = keccak256(abi.encode(PERMIT_TYPEHASH, owner, spender, value, _useNonce(owner), deadline));
        require(
            SignatureChecker.isValidSignatureNow(owner, _hashTypedDataV4(structHash), abi.encodePacked(r, s, v)),
            "EIP2612: invalid signature"
        );
        _approve(owner, spender, value);
    }

    function _executeAuthorization(
        bytes32 typehash,
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes memory signature
    ) private {
        require(block.timestamp > validAfter, "FiatTokenV2: authorization is not yet valid");
        require(block.timestamp < validBefore, "FiatTokenV2: authorization is expired");
        _requireUnusedAuthorization(from, nonce);
        _requireSignedBy(
            from, keccak256(abi.encode(typehash, from, to, value, validAfter, validBefore, nonce)), signature
        );
        _authorizationStates[from][nonce] = true;
        emit AuthorizationUsed(from, nonce);
        _transfer(from, to, value);
    }

    function _cancelAuthorization(address authorizer, bytes32 nonce, bytes memory signature) private {
        _requireUnusedAuthorization(authorizer, nonce);
        _requireSignedBy(authorizer, keccak256(abi.encode(CANCEL_AUTHORIZATION_TYPEHASH, authorizer, nonce)), signature);
        _authorizationStates[authorizer][nonce] = true;
        emit AuthorizationCanceled(authorizer, nonce);
    }

    function _requireUnusedAuthorization(address authorizer, bytes32 nonce) private view {
        require(!_authorizationStates[authorizer][nonce], "FiatTokenV2: authorization is used or canceled");
    }

    function _requireSignedBy(address signer, bytes32 structHash, bytes memory signature) private view {
        require(
            SignatureChecker.isValidSignatureNow(signer, _hashTypedDataV4(structHash), signature),
            "FiatTokenV2: invalid signature"
        );
    }
}
